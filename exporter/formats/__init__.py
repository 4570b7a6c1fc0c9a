"""Ingest formats: map a vendor's or a protocol's payload to raw events. No server imports here."""
