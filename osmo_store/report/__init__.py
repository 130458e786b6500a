"""Presentation of the storage report (``osmo store report``): prices, cost estimate, renderings.

The store engine computes the report as a plain dict; this package only prices and formats it
(JSON, CSV, text, one self-contained HTML page). It imports nothing from the store but its errors.
"""

from osmo_store.report.html import CSS as HTML_CSS, to_html, to_html_sections
from osmo_store.report.prices import DEFAULT_PRICES, estimate_costs, load_prices
from osmo_store.report.render import human_bytes, ratio, to_csv, to_json, to_text, utc_time

__all__ = ["DEFAULT_PRICES", "HTML_CSS", "estimate_costs", "human_bytes", "load_prices", "ratio", "to_csv", "to_html",
           "to_html_sections", "to_json", "to_text", "utc_time"]
