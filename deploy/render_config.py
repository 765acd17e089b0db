"""Renders deploy/k8s/configmap.yaml from the feature schema, catalog and stage rules in
engine/defaults (or the folder given): edit the TOML, render, apply. A test renders it
again and compares, so the committed ConfigMap never drifts from the defaults.

    python deploy/render_config.py [FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("features.toml", "catalog.toml", "lifecycle.toml")
OUT = ROOT / "deploy" / "k8s" / "configmap.yaml"


def render(folder: Path) -> str:
    lines = [
        "# Rendered by deploy/render_config.py from engine/defaults: edit the TOML files and",
        "# render again. Mounted at /etc/arbiter/config; the service reloads a changed catalog",
        "# or stage rules without a restart (a changed feature schema needs one).",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: arbiter-definitions",
        "data:",
    ]
    for name in FILES:
        text = (folder / name).read_text()
        # YAML's block chomping: "|" ends in one line break, "|+" keeps trailing blank
        # lines, "|-" none; so the file comes back byte for byte.
        chomp = "+" if text.endswith("\n\n") else "" if text.endswith("\n") else "-"
        lines.append(f"  {name}: |{chomp}")
        body = text[:-1] if text.endswith("\n") else text
        lines += [f"    {line}" if line else "" for line in body.split("\n")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "engine" / "defaults"
    OUT.write_text(render(source))
    print(f"wrote {OUT}")
