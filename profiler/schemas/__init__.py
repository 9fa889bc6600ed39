"""JSON Schemas of the run directory files (manifest, events, session); see docs/run-directory.md."""
