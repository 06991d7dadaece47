"""ERPNext (Frappe REST) simulator: ``simulator`` serves it; ``docs``, ``stock``, ``finance``,
``meta`` are its document rules; ``site`` is the demo site's Custom Fields and master data."""
