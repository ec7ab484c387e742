-- Amounts as exact decimals: the files carry them as text like 12.30 and DuckDB reads doubles.
select
    cast(payment_id as bigint) as payment_id,
    cast(order_id as bigint) as order_id,
    lower(cast(payment_method as varchar)) as payment_method,
    cast(amount as decimal(12, 2)) as amount
from {{ source('payments', 'payments') }}
