"""osmo_ui: ``osmo ui``, one web page for workflows, datasets, storage and pools.

A Starlette app served by uvicorn on 127.0.0.1 (docs/UI.md). It reads only public faces: the runtime's
``osmo_run.api``, the store's ``osmo_store.repository`` facade and ``osmo_store.report`` (an
import-linter contract in pyproject.toml). Every asset ships in the package (templates/, static/).

Modules: ``cli`` (the click command), ``app`` (routes, templates, errors), ``security`` (token, host
and cross-site checks), ``sources`` (where the data comes from, injectable), ``workflow_routes``,
``dataset_routes``, ``storage_routes``, ``graph`` and ``timeline`` (SVG drawn on the server).
"""
