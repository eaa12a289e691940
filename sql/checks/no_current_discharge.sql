-- check: discharge summaries / addenda of the stay's own admission among its notes (must be 0).
SELECT count(*) AS violations
FROM cohort_notes AS n
JOIN cohort AS c USING (stay_id)
JOIN staged_discharge AS d ON d.note_id = n.note_id
WHERE d.hadm_id = c.hadm_id OR d.charttime >= c.admittime
