"""Drift reports UI for auditors: a FastAPI app served by the Airflow api-server (see app.py)."""
