"""Warehouse (WMS) simulator: fulfilment orders in, shipments and returns out (``simulator``)."""
