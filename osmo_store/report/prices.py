"""Storage price table and the monthly cost estimate of the storage report.

The default table holds public list prices (USD) for five storage classes, each with the page it
comes from and the date it was checked; docs/COSTS.md explains every figure. A user overrides or
extends the table in the ``prices:`` section of the config file (``load_prices``), and
``estimate_costs`` turns byte counts into a monthly figure per class. A GB here is 10^9 bytes, the
unit cloud price lists use (not a GiB).

Pure functions only: no I/O, no clock, nothing from the store engine.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

from osmo_store.errors import UsageError

GB = 10**9
CURRENCY = "USD"
CHECKED = "2026-11-21"

# Fields holding a price (a finite number >= 0) and fields holding text.
PRICE_FIELDS = ("storage_gb_month", "write_per_1000", "read_per_1000", "retrieval_per_gb")
TEXT_FIELDS = ("label", "region", "source", "checked", "note")
CLASS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

DEFAULT_PRICES: dict[str, dict[str, Any]] = {
    "s3-standard": {
        "label": "S3 Standard",
        "region": "AWS us-east-1 (N. Virginia), first 50 TB per month",
        "storage_gb_month": 0.023,
        "write_per_1000": 0.005,  # PUT, COPY, POST, LIST
        "read_per_1000": 0.0004,  # GET, SELECT and all other requests
        "retrieval_per_gb": 0.0,
        "source": "https://aws.amazon.com/s3/pricing/",
        "checked": CHECKED,
        "note": "confirmed in https://cloudburn.io/blog/amazon-s3-pricing (storage) and "
        "https://c3x.dev/blog/s3-request-fees-explained (requests)",
    },
    "s3-standard-ia": {
        "label": "S3 Standard-Infrequent Access",
        "region": "AWS us-east-1 (N. Virginia)",
        "storage_gb_month": 0.0125,
        "write_per_1000": 0.01,
        "read_per_1000": 0.001,
        "retrieval_per_gb": 0.01,
        "source": "https://aws.amazon.com/s3/pricing/",
        "checked": CHECKED,
        "note": "30-day and 128 KB minimums not modelled; confirmed in "
        "https://gist.github.com/regispires/d3604636ec0e8d0d3ecab41f009f3d1c (storage) and "
        "https://c3x.dev/blog/s3-request-fees-explained (requests, retrieval)",
    },
    "azure-hot": {
        "label": "Azure Blob Hot (LRS)",
        "region": "Azure East US 2, LRS, first 50 TB per month",
        "storage_gb_month": 0.0184,
        "write_per_1000": 0.005,  # $0.05 per 10,000 write operations
        "read_per_1000": 0.0004,  # $0.004 per 10,000 read operations
        "retrieval_per_gb": 0.0,
        "source": "https://azure.microsoft.com/en-us/pricing/details/storage/blobs/",
        "checked": CHECKED,
        "note": "Azure prices operations per 10,000 ($0.05 write, $0.004 read); confirmed in "
        "https://kubequest.pages.dev/AZ-104/02-storage/scott-duffy/02-access-tiers-and-cost",
    },
    "azure-cool": {
        "label": "Azure Blob Cool (LRS)",
        "region": "Azure East US 2, LRS",
        "storage_gb_month": 0.01,
        "write_per_1000": 0.01,  # $0.10 per 10,000 write operations
        "read_per_1000": 0.001,  # $0.01 per 10,000 read operations
        "retrieval_per_gb": 0.01,  # widely known list price, not re-checked (docs/COSTS.md)
        "source": "https://azure.microsoft.com/en-us/pricing/details/storage/blobs/",
        "checked": CHECKED,
        "note": "Azure prices operations per 10,000 ($0.10 write, $0.01 read); storage and operations "
        "confirmed in https://kubequest.pages.dev/AZ-104/02-storage/scott-duffy/02-access-tiers-and-cost; "
        "retrieval not re-checked; 30-day minimum not modelled",
    },
    "local-disk": {
        "label": "Local disk (cloud block volume)",
        "region": "AWS EBS gp3, us-east-1, per provisioned GB-month (stands for a disk you pay "
        "for by size; override it for a workstation or NAS disk)",
        "storage_gb_month": 0.08,
        "write_per_1000": 0.0,
        "read_per_1000": 0.0,
        "retrieval_per_gb": 0.0,
        "source": "https://aws.amazon.com/ebs/pricing/",
        "checked": CHECKED,
        "note": "confirmed in https://www.saisci.com/aws/gp2-vs-gp3-cost-comparison-ebs-volumes/",
    },
}


def _number(where: str, name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number >= 0, else a one-line UsageError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}, field {name!r}: expected a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{where}, field {name!r}: expected a number >= 0, got {value!r}")
    return float(value)


def load_prices(overrides: dict | None = None) -> dict[str, dict[str, Any]]:
    """The default price table with the user's ``prices:`` section applied.

    ``overrides`` maps a class name to the fields to replace (any of PRICE_FIELDS and TEXT_FIELDS).
    A class not in the defaults is added when it gives at least ``storage_gb_month``; its other
    prices default to 0. Each overridden class lists the fields it took from the config in
    ``overridden``. Bad input raises UsageError naming the class and the field.
    """
    table = copy.deepcopy(DEFAULT_PRICES)
    for entry in table.values():
        entry["overridden"] = []
    if overrides is None:
        return table
    if not isinstance(overrides, dict):
        raise UsageError("prices: expected a mapping of storage class name to fields")
    for cls, fields in overrides.items():
        if not isinstance(cls, str) or not CLASS_NAME.match(cls):
            raise UsageError(f"prices: invalid storage class name {cls!r} (use A-Z a-z 0-9 . _ -)")
        if not isinstance(fields, dict):
            raise UsageError(f"prices: class {cls!r}: expected a mapping of field to value")
        for name in fields:
            if name not in PRICE_FIELDS and name not in TEXT_FIELDS:
                known = ", ".join(PRICE_FIELDS + TEXT_FIELDS)
                raise UsageError(f"prices: class {cls!r}, field {name!r}: unknown field (known: {known})")
        if cls not in table:
            if "storage_gb_month" not in fields:
                raise UsageError(f"prices: class {cls!r}, field 'storage_gb_month': required for a new class")
            table[cls] = {"label": cls, "region": "", "storage_gb_month": 0.0, "write_per_1000": 0.0,
                          "read_per_1000": 0.0, "retrieval_per_gb": 0.0, "source": "config file",
                          "checked": None, "note": "", "overridden": []}
        entry = table[cls]
        for name, value in fields.items():
            if name in PRICE_FIELDS:
                entry[name] = _number(f"prices: class {cls!r}", name, value)
            elif not isinstance(value, str):
                raise UsageError(f"prices: class {cls!r}, field {name!r}: expected text, got {value!r}")
            else:
                entry[name] = value
            entry["overridden"].append(name)
    return table


def _requests(requests_per_month: dict | None) -> tuple[float, float, float]:
    """(writes, reads, retrieved GB) per month from the optional traffic estimate."""
    if not requests_per_month:
        return 0.0, 0.0, 0.0
    known = {"writes", "reads", "retrieved_bytes"}
    for key in requests_per_month:
        if key not in known:
            raise UsageError(f"requests_per_month: unknown field {key!r} (known: {', '.join(sorted(known))})")
    vals = {k: _number("requests_per_month", k, requests_per_month.get(k, 0)) for k in known}
    return vals["writes"], vals["reads"], vals["retrieved_bytes"] / GB


def estimate_costs(stored_bytes: int, logical_bytes: int, prices: dict,
                   requests_per_month: dict | None = None) -> dict[str, Any]:
    """Monthly cost per storage class of keeping ``stored_bytes``, and of ``logical_bytes`` as-is.

    ``monthly`` = stored GB x storage price + request and retrieval costs; ``monthly_without_dedup``
    = logical GB x storage price + the same request and retrieval costs (the traffic estimate is
    the same either way), so ``savings`` is the storage difference. GB = 10^9 bytes.
    ``requests_per_month`` (optional): ``writes`` and ``reads`` (request counts) and
    ``retrieved_bytes`` (bytes read back, for classes with a retrieval price).
    """
    for name, value in (("stored_bytes", stored_bytes), ("logical_bytes", logical_bytes)):
        _number("estimate_costs", name, value)
    writes, reads, retrieved_gb = _requests(requests_per_month)
    classes = []
    dates = []
    for cls, p in prices.items():
        requests = writes / 1000 * p.get("write_per_1000", 0.0) + reads / 1000 * p.get("read_per_1000", 0.0)
        retrieval = retrieved_gb * p.get("retrieval_per_gb", 0.0)
        storage = stored_bytes / GB * p["storage_gb_month"]
        without = logical_bytes / GB * p["storage_gb_month"]
        monthly = storage + requests + retrieval
        monthly_without = without + requests + retrieval
        classes.append({
            "class": cls,
            "label": p.get("label", cls),
            "region": p.get("region", ""),
            "storage_gb_month": p["storage_gb_month"],
            "storage": storage,
            "requests": requests,
            "retrieval": retrieval,
            "monthly": monthly,
            "monthly_without_dedup": monthly_without,
            "savings": monthly_without - monthly,
            "source": p.get("source", ""),
            "checked": p.get("checked"),
            "overridden": list(p.get("overridden", [])),
        })
        if p.get("checked"):
            dates.append(p["checked"])
    return {"currency": CURRENCY, "as_of": min(dates) if dates else CHECKED, "gb": GB, "classes": classes}
