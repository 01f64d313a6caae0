"""SIEM alert intake: authenticated webhooks, durable dedup store, launch worker."""
