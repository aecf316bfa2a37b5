"""The tool venvs of tests/integration (tools/tool_venvs.py builds them; the local cluster's MLflow too)."""

from tools.tool_venvs import TOOLS, tools_venv

__all__ = ["TOOLS", "tools_venv"]
