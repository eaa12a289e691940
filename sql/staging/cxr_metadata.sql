-- staged_cxr_metadata: one row per MIMIC-CXR-JPG image (cxr/mimic-cxr-2.0.0-metadata).
-- study_time = StudyDate (YYYYMMDD) + StudyTime parsed as a number (macro cxr_clock);
-- path is relative to <root>/cxr/: files/p{first 2 digits}/p{subject}/s{study}/{dicom}.jpg.
WITH parsed AS (
    SELECT
        dicom_id,
        TRY_CAST(subject_id AS BIGINT)         AS subject_id,
        TRY_CAST(study_id AS BIGINT)           AS study_id,
        ViewPosition                           AS view_position,  -- AP / PA frontal, LATERAL, LL, ...
        try_strptime(StudyDate, '%Y%m%d')
            + cxr_clock(TRY_CAST(StudyTime AS DOUBLE)) AS study_time
    FROM raw
)
SELECT
    *,
    'files/p' || substr(CAST(subject_id AS VARCHAR), 1, 2)
        || '/p' || CAST(subject_id AS VARCHAR)
        || '/s' || CAST(study_id AS VARCHAR)
        || '/' || dicom_id || '.jpg' AS path,
    CASE
        WHEN dicom_id IS NULL THEN 'dicom_id empty'
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN study_id IS NULL THEN 'study_id not an integer'
        WHEN study_time IS NULL THEN 'StudyDate/StudyTime unparseable'
    END AS _reject,
    CAST(NULL AS VARCHAR) AS _unparsed   -- every typed column is required (rejected above)
FROM parsed
