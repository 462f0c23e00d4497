"""Loopback S3/COS object store fixture (moto's S3 backend served alone). Filled by the contract issue."""
