-- check: eligible notes written or stored at or after t0 (must be 0).
SELECT count(*) AS violations
FROM cohort_notes AS n
JOIN cohort AS c USING (stay_id)
LEFT JOIN staged_radiology AS r ON r.note_id = n.note_id
WHERE n.charttime >= c.prediction_time
   OR coalesce(r.storetime, r.charttime) >= c.prediction_time
   OR n.note_id NOT IN (SELECT note_id FROM staged_radiology
                        UNION ALL SELECT note_id FROM staged_discharge)
