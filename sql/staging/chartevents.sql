-- staged_chartevents: bedside vital signs from MIMIC-IV icu/chartevents, only the item ids
-- of sql/variables.csv with source = 'chart':
--   heart_rate 220045; sbp 220179, 220050, 225309; dbp 220180, 220051, 225310;
--   mbp 220181, 220052, 225312; resp_rate 220210, 224690; temperature 223762 (°C),
--   223761 (°F, converted where it enters ehr_events.sql); spo2 220277;
--   glucose 225664, 220621, 226537.
-- Real chartevents has ~433 M rows: this is a streaming scan + filter, no window functions.
WITH parsed AS (
    SELECT
        TRY_CAST(subject_id AS BIGINT) AS subject_id,
        TRY_CAST(hadm_id AS BIGINT)    AS hadm_id,
        TRY_CAST(stay_id AS BIGINT)    AS stay_id,
        TRY_CAST(itemid AS INTEGER)    AS itemid,
        mimic_ts(charttime)            AS charttime,
        mimic_ts(storetime)            AS storetime,
        TRY_CAST(valuenum AS DOUBLE)   AS valuenum,
        valueuom,
        hadm_id                        AS raw_hadm_id,
        storetime                      AS raw_storetime
    FROM raw
    WHERE TRY_CAST(itemid AS INTEGER) IN (SELECT itemid FROM variables WHERE source = 'chart')
       OR TRY_CAST(itemid AS INTEGER) IS NULL AND itemid IS NOT NULL   -- counted, not skipped
)
SELECT
    * EXCLUDE (raw_hadm_id, raw_storetime),
    CASE
        WHEN itemid IS NULL THEN 'itemid not an integer'
        WHEN stay_id IS NULL THEN 'stay_id not an integer'
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN charttime IS NULL THEN 'charttime unparseable'
        WHEN valuenum IS NULL OR NOT isfinite(valuenum) THEN 'valuenum empty or not numeric'
    END AS _reject,
    nullif(concat_ws(' ',
        unparsed('hadm_id', raw_hadm_id, hadm_id),
        unparsed('storetime', raw_storetime, storetime)
    ), '') AS _unparsed
FROM parsed
