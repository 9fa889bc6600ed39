"""Wrappers and output parsers for the profiling tools WaAP runs inside an application's container."""
