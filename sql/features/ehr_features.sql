-- ehr_features: per stay and variable, mean / min / max / last (latest charttime, ties to
-- the larger value) / count of the kept values in [intime - lookback, t0) (ehr_events), plus
-- age and gender. Count is 0 and the other aggregates NULL when a variable has none.
-- The feature_columns placeholder expands, for each variable of sql/variables.csv, to
--   avg(value) FILTER (WHERE variable = 'heart_rate') AS heart_rate_mean,
--   min(...) AS heart_rate_min, max(...) AS heart_rate_max,
--   first(value ORDER BY charttime DESC, value DESC) FILTER (...) AS heart_rate_last,
--   count(value) FILTER (...) AS heart_rate_count
SELECT
    c.stay_id,
    c.age,
    c.gender,
    {{feature_columns}}
FROM cohort_stays AS c
LEFT JOIN (SELECT * FROM ehr_events WHERE kept) AS e ON e.stay_id = c.stay_id
GROUP BY c.stay_id, c.age, c.gender
ORDER BY c.stay_id
