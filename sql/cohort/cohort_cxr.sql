-- cohort_cxr: the chosen chest X-ray per stay: the latest frontal image (ViewPosition AP
-- or PA) of the subject with admittime <= study_time < t0 whose JPG exists (cxr_files,
-- listed once by the runner), ties to the lowest dicom_id. Laterals are never chosen.
SELECT
    c.stay_id,
    m.dicom_id,
    m.study_id,
    m.study_time,
    m.path
FROM cohort_stays AS c
JOIN staged_cxr_metadata AS m ON m.subject_id = c.subject_id
SEMI JOIN cxr_files AS f ON f.path = m.path
WHERE m.view_position IN ('AP', 'PA')
  AND m.study_time >= c.admittime
  AND m.study_time < c.prediction_time
QUALIFY row_number() OVER (
    PARTITION BY c.stay_id ORDER BY m.study_time DESC, m.dicom_id ASC
) = 1
