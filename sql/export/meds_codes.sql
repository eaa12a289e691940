-- meds_codes: metadata/codes.parquet (MEDS code metadata: code, description,
-- parent_codes) for every measurement code the export can hold, from sql/variables.csv.
SELECT DISTINCT
    CASE source WHEN 'lab' THEN 'LAB//' || itemid || '//' || item_unit
                ELSE 'CHART//' || itemid END AS code,
    item_label || ' (' || variable || ', ' || unit || ')' AS description,
    CAST([] AS VARCHAR[]) AS parent_codes
FROM variables
ORDER BY code
