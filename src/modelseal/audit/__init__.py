"""Auditors: offline bundles and reports."""
