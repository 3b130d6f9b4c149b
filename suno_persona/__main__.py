"""``python -m suno_persona``: the same as the ``suno-persona`` command."""

from __future__ import annotations

from suno_persona._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
