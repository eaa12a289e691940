-- meds_events: the cohort's EHR in the MEDS data schema (subject_id, time, code,
-- numeric_value), one row per event, for the subjects of one split ({{split}}).
--   measurements: exactly the values the EHR features use (ehr_events.sql: each cohort
--     stay's chartevents and the subject's labevents in [intime - lookback, t0), kept = inside
--     the plausible range), so every event is before the t0 of the stay it belongs to;
--     codes CHART//<itemid> and LAB//<itemid>//<unit>; numeric_value in the unit of
--     sql/variables.csv (the °F temperature item 223761 converted to °C, as the features).
--     A subject with two cohort stays gets both stays' windows; an event in both is once.
--   demographics: GENDER//<F|M> as a static code (time null), and MEDS_BIRTH on 1 January
--     of anchor_year - anchor_age (MIMIC gives age at anchor_year, not a birth date).
-- Rows are sorted by subject, then time (static rows first), as MEDS requires.
WITH subjects AS (
    SELECT DISTINCT subject_id, split FROM cohort
),
measurements AS (
    SELECT DISTINCT
        c.subject_id,
        e.charttime AS time,
        CASE e.source
            WHEN 'lab' THEN 'LAB//' || e.itemid || '//' || v.item_unit
            ELSE 'CHART//' || e.itemid
        END AS code,
        CAST(e.value AS FLOAT) AS numeric_value
    FROM ehr_events AS e
    JOIN cohort AS c ON c.stay_id = e.stay_id
    JOIN variables AS v ON v.itemid = e.itemid AND v.source = e.source
    WHERE e.kept
),
static AS (
    SELECT p.subject_id, CAST(NULL AS TIMESTAMP) AS time, 'GENDER//' || p.gender AS code,
           CAST(NULL AS FLOAT) AS numeric_value
    FROM staged_patients AS p
    WHERE p.gender IS NOT NULL AND p.subject_id IN (SELECT subject_id FROM subjects)
    UNION ALL
    SELECT p.subject_id, make_timestamp(p.anchor_year - p.anchor_age, 1, 1, 0, 0, 0),
           'MEDS_BIRTH', CAST(NULL AS FLOAT)
    FROM staged_patients AS p
    WHERE p.subject_id IN (SELECT subject_id FROM subjects)
)
SELECT CAST(x.subject_id AS BIGINT) AS subject_id, x.time, x.code, x.numeric_value
FROM (SELECT * FROM static UNION ALL SELECT * FROM measurements) AS x
JOIN subjects AS s ON s.subject_id = x.subject_id
WHERE s.split = '{{split}}'
ORDER BY x.subject_id, x.time NULLS FIRST, x.code, x.numeric_value
