-- long_los: ICU stay strictly longer than long_stay (default 7 days; exactly 7 days is 0).
-- Never NULL: every stay of the cohort has an outtime.
SELECT stay_id, CAST(outtime > intime + getvariable('long_stay') AS TINYINT) AS label
FROM cohort_stays
