"""The Jenkins side of WaAP: the job's parameter contract, rendering the pipeline and job, applying it, and the
client that triggers and follows builds (``waap-submit``)."""
