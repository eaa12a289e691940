-- check: chosen images taken at or after t0, before admission, not frontal, or not the
-- image named by cohort.cxr_dicom_id (must be 0).
SELECT
    (SELECT count(*)
     FROM cohort_cxr AS x
     JOIN cohort AS c USING (stay_id)
     LEFT JOIN staged_cxr_metadata AS m ON m.dicom_id = x.dicom_id
     WHERE x.study_time >= c.prediction_time
        OR x.study_time < c.admittime
        OR m.view_position IS NULL
        OR m.view_position NOT IN ('AP', 'PA')
        OR c.cxr_dicom_id IS DISTINCT FROM x.dicom_id)
  + (SELECT count(*) FROM cohort AS c
     WHERE c.has_cxr AND c.stay_id NOT IN (SELECT stay_id FROM cohort_cxr)) AS violations
