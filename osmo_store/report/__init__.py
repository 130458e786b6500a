"""Presentation of the storage report (``osmo store report``): prices, cost estimate, renderings.

The store engine computes the report as a plain dict; this package only prices and formats it
(JSON, CSV, text, one self-contained HTML page). It imports nothing from the store but its errors.
Its names are loaded from their modules when first used (``render``'s small helpers serve every
command's output; the HTML page and the prices only the report's).
"""

from importlib import import_module

_WHERE = {"HTML_CSS": ("html", "CSS"), "to_html": ("html", "to_html"), "to_html_sections": ("html", "to_html_sections"),
          "DEFAULT_PRICES": ("prices", "DEFAULT_PRICES"), "estimate_costs": ("prices", "estimate_costs"),
          "load_prices": ("prices", "load_prices"), "human_bytes": ("render", "human_bytes"),
          "ratio": ("render", "ratio"), "to_csv": ("render", "to_csv"), "to_json": ("render", "to_json"),
          "to_text": ("render", "to_text"), "utc_time": ("render", "utc_time")}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = getattr(import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value
