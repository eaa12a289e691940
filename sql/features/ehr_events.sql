-- ehr_events: every numeric value of a listed variable (sql/variables.csv) in the window
-- [intime - L, t0), unit-converted where it enters, with `kept` = within the plausible
-- range [low, high] (values outside are dropped from the features and counted).
-- Variables set by the runner: ehr_lookback (L, default 6 h); t0 = intime + W.
-- Chart events join the stay by stay_id; labs join the subject by subject_id and time
-- (never hadm_id: it is often empty).
WITH chart AS (
    SELECT
        c.stay_id,
        v.variable,
        'chart' AS source,
        ce.itemid,
        ce.charttime,
        CASE
            WHEN v.item_unit = '°F' THEN (ce.valuenum - 32) * 5 / 9   -- temperature 223761
            ELSE ce.valuenum
        END AS value,
        v.low,
        v.high
    FROM cohort_stays AS c
    JOIN staged_chartevents AS ce ON ce.stay_id = c.stay_id
    JOIN variables AS v ON v.itemid = ce.itemid AND v.source = 'chart'
    WHERE ce.charttime >= c.intime - getvariable('ehr_lookback')
      AND ce.charttime < c.prediction_time
      AND ce.valuenum IS NOT NULL
),
lab AS (
    SELECT
        c.stay_id,
        v.variable,
        'lab' AS source,
        le.itemid,
        le.charttime,
        le.valuenum AS value,
        v.low,
        v.high
    FROM cohort_stays AS c
    JOIN staged_labevents AS le ON le.subject_id = c.subject_id
    JOIN variables AS v ON v.itemid = le.itemid AND v.source = 'lab'
    WHERE le.charttime >= c.intime - getvariable('ehr_lookback')
      AND le.charttime < c.prediction_time
      AND le.valuenum IS NOT NULL
)
SELECT
    stay_id,
    variable,
    source,
    itemid,
    charttime,
    value,
    value >= low AND value <= high AS kept
FROM (SELECT * FROM chart UNION ALL SELECT * FROM lab)
