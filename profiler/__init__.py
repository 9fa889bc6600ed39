"""WaAP, the Waggle Application Profiler: run a plugin image under measurement and keep the results."""

__version__ = "0.1.0"

__all__ = ["__version__"]
