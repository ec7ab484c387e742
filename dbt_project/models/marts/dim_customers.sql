-- One row per customer with their order history.
with orders as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as orders,
        sum(amount_paid) filter (where is_revenue) as lifetime_value
    from {{ ref('fct_orders') }}
    group by customer_id
)

select
    c.customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.country_code,
    c.signup_date,
    o.first_order_date,
    o.last_order_date,
    coalesce(o.orders, 0) as orders,
    coalesce(o.lifetime_value, 0)::decimal(18, 2) as lifetime_value
from {{ ref('stg_customers') }} as c
left join orders as o using (customer_id)
