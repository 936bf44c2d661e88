"""Customers, orders, browsing events and support conversations, and their ingestion."""
