# Astro Runtime for Airflow 3.3 (Python 3.11). The runtime image does not bundle the http, sftp,
# postgres or redis providers: requirements.txt pins them, constraints.txt pins everything else.
FROM astrocrpublic.azurecr.io/runtime:3.3-1

# `include/` holds the erp_sync package (Airflow-free logic the DAGs import as `erp_sync`).
ENV PYTHONPATH=/usr/local/airflow/include
COPY constraints.txt /tmp/constraints.txt
ENV PIP_CONSTRAINT=/tmp/constraints.txt
