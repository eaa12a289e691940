-- staged_admissions: one row per hospital admission, from MIMIC-IV hosp/admissions.
-- hospital_expire_flag = 1 is the in-hospital mortality label; deathtime bounds rule 5.
WITH parsed AS (
    SELECT
        TRY_CAST(subject_id AS BIGINT)            AS subject_id,
        TRY_CAST(hadm_id AS BIGINT)               AS hadm_id,
        mimic_ts(admittime)                       AS admittime,
        mimic_ts(dischtime)                       AS dischtime,
        mimic_ts(deathtime)                       AS deathtime,   -- empty unless died
        TRY_CAST(hospital_expire_flag AS TINYINT) AS hospital_expire_flag,
        deathtime                                 AS raw_deathtime
    FROM raw
)
SELECT
    * EXCLUDE (raw_deathtime),
    CASE
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN hadm_id IS NULL THEN 'hadm_id not an integer'
        WHEN admittime IS NULL THEN 'admittime unparseable'
        WHEN dischtime IS NULL THEN 'dischtime unparseable'
        WHEN hospital_expire_flag IS NULL OR hospital_expire_flag NOT IN (0, 1)
            THEN 'hospital_expire_flag not 0/1'
    END AS _reject,
    unparsed('deathtime', raw_deathtime, deathtime) AS _unparsed
FROM parsed
