-- check: duplicate stay_id rows in the cohort (must be 0).
SELECT count(*) - count(DISTINCT stay_id) AS violations FROM cohort
