"""Walmart Marketplace API simulator (``simulator``) and its order book (``orders``)."""
