"""Delivery to the PACS and the EHR: the senders (and, with the pipeline, the outbox)."""
