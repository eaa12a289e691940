-- staged_labevents: laboratory results from MIMIC-IV hosp/labevents, only the item ids of
-- sql/variables.csv with source = 'lab':
--   creatinine 50912; bun 51006; sodium 50983; potassium 50971; chloride 50902;
--   bicarbonate 50882; anion_gap 50868; calcium 50893; glucose_lab 50931;
--   hemoglobin 51222; hematocrit 51221; platelets 51265; wbc 51301; lactate 50813;
--   bilirubin_total 50885; inr 51237.
-- hadm_id is often empty (outpatient draws): labs join stays by subject_id and time.
WITH parsed AS (
    SELECT
        TRY_CAST(labevent_id AS BIGINT) AS labevent_id,
        TRY_CAST(subject_id AS BIGINT)  AS subject_id,
        TRY_CAST(hadm_id AS BIGINT)     AS hadm_id,       -- NULL when empty
        TRY_CAST(itemid AS INTEGER)     AS itemid,
        mimic_ts(charttime)             AS charttime,
        mimic_ts(storetime)             AS storetime,
        TRY_CAST(valuenum AS DOUBLE)    AS valuenum,
        valueuom,
        labevent_id                     AS raw_labevent_id,
        hadm_id                         AS raw_hadm_id,
        storetime                       AS raw_storetime
    FROM raw
    WHERE TRY_CAST(itemid AS INTEGER) IN (SELECT itemid FROM variables WHERE source = 'lab')
       OR TRY_CAST(itemid AS INTEGER) IS NULL AND itemid IS NOT NULL   -- counted, not skipped
)
SELECT
    * EXCLUDE (raw_labevent_id, raw_hadm_id, raw_storetime),
    CASE
        WHEN itemid IS NULL THEN 'itemid not an integer'
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN charttime IS NULL THEN 'charttime unparseable'
        WHEN valuenum IS NULL OR NOT isfinite(valuenum) THEN 'valuenum empty or not numeric'
    END AS _reject,
    nullif(concat_ws(' ',
        unparsed('labevent_id', raw_labevent_id, labevent_id),
        unparsed('hadm_id', raw_hadm_id, hadm_id),
        unparsed('storetime', raw_storetime, storetime)
    ), '') AS _unparsed
FROM parsed
