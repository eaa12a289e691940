-- check: subjects found in more than one split (must be 0).
SELECT count(*) AS violations
FROM (SELECT subject_id FROM cohort GROUP BY subject_id HAVING count(DISTINCT split) > 1)
