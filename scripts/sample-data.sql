-- Sample source tables shaped like the runbook's llm_traces / llm_metric_results.
-- psql variables: traces (number of traces; each gets 4 metric results).
-- Text columns are 100 B - 1 KB, as in real traces.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE llm_traces (
    id               bigserial PRIMARY KEY,
    trace_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    timestamp        timestamptz NOT NULL DEFAULT now(),
    prompt           text,
    completion       text,
    deployment_env   text,
    service_name     text,
    component_name   text,
    response_time_ms numeric(12, 3),
    metadata         jsonb,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE llm_metric_results (
    id              bigserial PRIMARY KEY,
    trace_id        uuid NOT NULL,
    metric_name     text NOT NULL,
    metric_value    double precision,
    metric_category text,
    explanation     text,
    passed          boolean,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX ON llm_traces (created_at);
CREATE INDEX ON llm_metric_results (created_at);

-- Inserts :n traces with 4 results each; callable again to add new rows.
CREATE FUNCTION add_sample_traces(n int) RETURNS void LANGUAGE sql AS $$
    WITH t AS (
        INSERT INTO llm_traces (timestamp, prompt, completion, deployment_env, service_name,
                                component_name, response_time_ms, metadata)
        SELECT now() - (g || ' seconds')::interval,
               'Summarise ticket #' || g || ': ' || repeat('customer reports a sync delay; ', 3 + g % 29),
               'The ticket describes ' || repeat('a delayed nightly export that ', 3 + g % 31) || 'needs a retry.',
               (ARRAY['prod', 'staging', 'dev'])[1 + g % 3],
               (ARRAY['support-bot', 'search', 'summariser'])[1 + g % 3],
               (ARRAY['retriever', 'generator', 'ranker', 'guardrail'])[1 + g % 4],
               round((50 + random() * 2000)::numeric, 3),
               jsonb_build_object('model', (ARRAY['gpt-4o', 'claude', 'llama'])[1 + g % 3],
                                  'tokens', 100 + g % 900, 'tags', jsonb_build_array('demo', g % 5))
        FROM generate_series(1, n) AS g
        RETURNING trace_id
    )
    INSERT INTO llm_metric_results (trace_id, metric_name, metric_value, metric_category, explanation, passed)
    SELECT t.trace_id, m.name, round(random()::numeric, 4)::float8, m.category,
           'Scored by the ' || m.name || ' judge: ' || repeat('reasoning step. ', 5 + (random() * 25)::int),
           random() > 0.2
    FROM t CROSS JOIN (VALUES ('faithfulness', 'quality'), ('relevance', 'quality'),
                              ('toxicity', 'safety'), ('latency_slo', 'performance')) AS m(name, category);
$$;

SELECT add_sample_traces(:traces);
