-- One row per order with what was paid for it. Revenue counts orders that were not cancelled or
-- returned.
with payments as (
    select
        order_id,
        count(*) as payments,
        sum(amount) as amount_paid,
        sum(amount) filter (where payment_method = 'gift_card') as gift_card_amount
    from {{ ref('stg_payments') }}
    group by order_id
)

select
    o.order_id,
    o.customer_id,
    o.order_date,
    o.status,
    coalesce(p.payments, 0) as payments,
    coalesce(p.amount_paid, 0)::decimal(18, 2) as amount_paid,
    coalesce(p.gift_card_amount, 0)::decimal(18, 2) as gift_card_amount,
    o.status not in ('cancelled', 'returned') as is_revenue
from {{ ref('stg_orders') }} as o
left join payments as p using (order_id)
