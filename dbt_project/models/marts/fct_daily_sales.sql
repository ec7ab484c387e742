-- One row per day with orders: what the shop sold that day.
select
    order_date as sales_date,
    count(*) as orders,
    count(*) filter (where status = 'completed') as completed_orders,
    count(*) filter (where status in ('cancelled', 'returned')) as cancelled_or_returned_orders,
    count(distinct customer_id) as customers,
    coalesce(sum(amount_paid) filter (where is_revenue), 0)::decimal(18, 2) as revenue,
    round(
        coalesce(sum(amount_paid) filter (where is_revenue), 0)
        / nullif(count(*) filter (where is_revenue), 0),
        2
    )::decimal(18, 2) as avg_order_value
from {{ ref('fct_orders') }}
group by order_date
