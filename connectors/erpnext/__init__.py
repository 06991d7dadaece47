"""ERPNext (Frappe REST): the built-in ERP.

``client`` (the ErpConnector: sales orders, shipments, cancellations, returns and credit notes,
exactly once), ``documents`` and ``notes`` (the ERPNext documents, pure), ``frappe`` (the HTTP
session and the error mapping), ``fields`` (the Custom Fields and master data it needs;
``fields_check`` asks the site for them at start), ``stock_feed`` (Bins by ``modified``),
``order_feed`` (sales orders the ERP ended), ``reconcile`` (its reconciliation readers),
``settings`` (``ErpNextSettings``). ``plugin`` registers all of it (``retail_sync/erps.py``
lists it as the built-in ERP).
"""

from __future__ import annotations

from retail_sync.connectors.erpnext.client import ErpNextConnector
from retail_sync.connectors.erpnext.fields_check import run_startup_check
from retail_sync.connectors.erpnext.order_feed import ErpOrderFeed
from retail_sync.connectors.erpnext.reconcile import read_credit_notes, read_sales_orders
from retail_sync.connectors.erpnext.settings import ErpNextSettings
from retail_sync.connectors.erpnext.stock_feed import ErpStockFeed
from retail_sync.connectors.plugin import ErpPlugin

plugin = ErpPlugin(
    name="erpnext",
    description="ERPNext over its REST API (Frappe token auth)",
    settings_model=ErpNextSettings,
    connector=ErpNextConnector.from_settings,
    stock_feed=ErpStockFeed.from_settings,
    order_feed=ErpOrderFeed.from_settings,
    read_sales_orders=read_sales_orders,
    read_credit_notes=read_credit_notes,
    startup_check=run_startup_check,
)

__all__ = ["ErpNextSettings", "plugin"]
