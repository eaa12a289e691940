"""Exports of the cohort to other ecosystems' formats (SQL in this folder's `.sql` files)."""
