# MLflow server with the Postgres driver and the S3 client (the official image ships neither).
FROM ghcr.io/mlflow/mlflow:v3.1.0
RUN pip install --no-cache-dir "psycopg2-binary>=2.9" "boto3>=1.34"
