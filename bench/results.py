"""What every benchmark script does with its figures besides printing them."""
import json


def save(result, path):
    """Write ``result`` as JSON to ``path`` when one is given (``--json``); returns ``result``."""
    if path:
        with open(path, 'w') as f:
            json.dump(result, f, indent=2)
    return result
