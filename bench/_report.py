"""What every bench script ends with: print its figures as JSON, and save them if asked."""

from __future__ import annotations

import json


def emit(figures: dict, json_path: str | None = None) -> None:
    """Print ``figures`` as indented JSON; also write them to ``json_path`` when given."""
    print(json.dumps(figures, indent=1))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(figures, fh, indent=1)
