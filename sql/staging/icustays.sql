-- staged_icustays: one row per ICU stay, from MIMIC-IV icu/icustays.
-- Stays whose outtime precedes intime are junk: dropped and counted, never fatal.
WITH parsed AS (
    SELECT
        TRY_CAST(subject_id AS BIGINT) AS subject_id,
        TRY_CAST(hadm_id AS BIGINT)    AS hadm_id,
        TRY_CAST(stay_id AS BIGINT)    AS stay_id,
        first_careunit,
        mimic_ts(intime)               AS intime,
        mimic_ts(outtime)              AS outtime
    FROM raw
)
SELECT
    *,
    CASE
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN hadm_id IS NULL THEN 'hadm_id not an integer'
        WHEN stay_id IS NULL THEN 'stay_id not an integer'
        WHEN intime IS NULL THEN 'intime unparseable'
        WHEN outtime IS NULL THEN 'outtime unparseable'
        WHEN outtime < intime THEN 'outtime before intime'
    END AS _reject,
    CAST(NULL AS VARCHAR) AS _unparsed   -- every typed column is required (rejected above)
FROM parsed
