-- cohort: one row per stay of the cohort with labels, split and the modalities available
-- at t0 (has_ehr: a kept value in ehr_events; has_notes: a row in cohort_notes;
-- has_cxr: a chosen image in cohort_cxr). Then one label column per registered task, in
-- registry order, from the views task_<name> (sql/tasks/<name>.sql), filled in by the runner.
SELECT
    s.stay_id,
    s.subject_id,
    s.hadm_id,
    s.intime,
    s.prediction_time,
    s.age,
    s.gender,
    s.split,
    {{task_labels}}
    s.stay_id IN (SELECT stay_id FROM ehr_events WHERE kept) AS has_ehr,
    s.stay_id IN (SELECT stay_id FROM cohort_notes) AS has_notes,
    x.dicom_id IS NOT NULL AS has_cxr,
    x.dicom_id AS cxr_dicom_id,
    -- context for the downstream assets (not labels, not features)
    s.outtime,
    s.admittime,
    s.dischtime,
    s.deathtime
FROM cohort_stays AS s
LEFT JOIN cohort_cxr AS x ON x.stay_id = s.stay_id
{{task_joins}}
ORDER BY s.stay_id
