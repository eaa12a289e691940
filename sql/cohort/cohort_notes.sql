-- cohort_notes: the notes a stay may use at t0 (no text here; it stays in the staged
-- tables, joined by note_id only where it is embedded).
--   radiology: reports of the subject with admittime <= charttime < t0
--              and coalesce(storetime, charttime) < t0;
--   discharge: summaries ('DS') and addenda ('AD') of the subject's earlier admissions
--              (charttime < admittime); those of the current admission never qualify.
SELECT c.stay_id, r.note_id, r.note_type, r.charttime
FROM cohort_stays AS c
JOIN staged_radiology AS r ON r.subject_id = c.subject_id
WHERE r.charttime >= c.admittime
  AND r.charttime < c.prediction_time
  AND coalesce(r.storetime, r.charttime) < c.prediction_time
UNION ALL
SELECT c.stay_id, d.note_id, d.note_type, d.charttime
FROM cohort_stays AS c
JOIN staged_discharge AS d ON d.subject_id = c.subject_id
WHERE d.note_type IN ('DS', 'AD')
  AND d.charttime < c.admittime
  AND d.charttime < c.prediction_time             -- guard: t0 bounds every modality
  AND d.hadm_id IS DISTINCT FROM c.hadm_id        -- never the current admission's summary
