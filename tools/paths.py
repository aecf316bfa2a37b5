"""Where the checkout is: tools/ runs only from a checkout (it is not in the wheel), so its root is fixed."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
