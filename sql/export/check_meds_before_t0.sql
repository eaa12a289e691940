-- check_meds_before_t0: events of the MEDS export that break the leak rule: a timed event
-- (MEDS_BIRTH aside) in no cohort stay's window [intime - lookback, t0) of its subject, so in
-- particular none at or after t0. 0 = none. Reads meds_events (all splits) and cohort.
SELECT count(*)
FROM meds_events AS e
WHERE e.time IS NOT NULL
  AND e.code <> 'MEDS_BIRTH'
  AND NOT EXISTS (
      SELECT 1
      FROM cohort AS c
      WHERE c.subject_id = e.subject_id
        AND e.time >= c.intime - getvariable('ehr_lookback')
        AND e.time < c.prediction_time
  )
