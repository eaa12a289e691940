-- check: EHR values entering the features outside [intime - lookback, t0) (must be 0), and
-- feature rows that do not match the cohort one to one.
SELECT
    (SELECT count(*)
     FROM ehr_events AS e
     JOIN cohort AS c USING (stay_id)
     WHERE e.kept AND (e.charttime >= c.prediction_time
                       OR e.charttime < c.intime - getvariable('ehr_lookback')))
  + (SELECT count(*) FROM cohort WHERE stay_id NOT IN (SELECT stay_id FROM ehr_features))
  + (SELECT count(*) - count(DISTINCT stay_id) FROM ehr_features) AS violations
