-- cohort_flow: stays remaining after each inclusion rule (a CONSORT-style flow).
SELECT 0 AS step, 'ICU stays (staged icustays)' AS rule, count(*) AS stays
FROM cohort_candidates
UNION ALL
SELECT 1, 'joins admissions and patients', count(*) FILTER (WHERE rule_1_joined)
FROM cohort_candidates
UNION ALL
SELECT 2, 'age >= 18', count(*) FILTER (WHERE rule_1_joined AND rule_2_adult)
FROM cohort_candidates
UNION ALL
SELECT 3, 'first ICU stay of the admission',
    count(*) FILTER (WHERE rule_1_joined AND rule_2_adult AND rule_3_first_stay)
FROM cohort_candidates
UNION ALL
SELECT 4, 'ICU stay >= observation window',
    count(*) FILTER (WHERE rule_1_joined AND rule_2_adult AND rule_3_first_stay
                       AND rule_4_min_stay)
FROM cohort_candidates
UNION ALL
SELECT 5, 'in hospital and alive at t0',
    count(*) FILTER (WHERE rule_1_joined AND rule_2_adult AND rule_3_first_stay
                       AND rule_4_min_stay AND rule_5_in_hospital_at_t0)
FROM cohort_candidates
ORDER BY step
