-- fct_daily_sales must account for every order exactly once (returns rows on failure).
{{ config(meta={'dagster': {'ref': {'name': 'fct_daily_sales'}}}) }}
select total_daily, total_orders
from
    (select coalesce(sum(orders), 0) as total_daily from {{ ref('fct_daily_sales') }}),
    (select count(*) as total_orders from {{ ref('stg_orders') }})
where total_daily <> total_orders
