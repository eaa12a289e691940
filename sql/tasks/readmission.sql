-- readmission: another admission with dischtime < admittime_next <= dischtime + 30 d
-- (readmission_window). NULL when the patient died in this admission.
SELECT
    c.stay_id,
    CASE
        WHEN c.hospital_expire_flag = 1 THEN NULL
        WHEN EXISTS (
            SELECT 1
            FROM staged_admissions AS n
            WHERE n.subject_id = c.subject_id
              AND n.hadm_id <> c.hadm_id
              AND n.admittime > c.dischtime
              AND n.admittime <= c.dischtime + getvariable('readmission_window')
        ) THEN 1
        ELSE 0
    END::TINYINT AS label
FROM cohort_stays AS c
