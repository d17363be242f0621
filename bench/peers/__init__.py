"""Peer tools run in bench/.venv-peers (dlt, datacompy): stand-alone scripts, no erp_sync imports."""
